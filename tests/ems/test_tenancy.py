import pytest

from ems.errors import PermissionDenied
from ems.tenancy import caller_for_client, caller_for_user, scoped
from endorsements.models import Member
from tests.factories import EmployerFactory, MemberFactory, UserFactory, api_client_create, hr_user_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_employers():
    first, second = EmployerFactory(), EmployerFactory()
    MemberFactory.create_batch(2, employer=first)
    MemberFactory.create_batch(3, employer=second)
    return first, second


def test_an_api_client_sees_only_its_employer(two_employers):
    first, _ = two_employers
    client, _ = api_client_create(employer=first)
    caller = caller_for_client(client)
    assert caller.principal == f"client:{client.client_id}"
    assert set(scoped(Member.objects.all(), caller).values_list("employer_id", flat=True)) == {first.pk}


def test_an_hr_user_sees_only_their_employer(two_employers):
    _, second = two_employers
    caller = caller_for_user(hr_user_create(employer=second))
    assert scoped(Member.objects.all(), caller).count() == 3


def test_staff_are_unscoped_and_a_user_without_employer_is_refused(two_employers):
    staff = UserFactory(is_staff=True)
    assert scoped(Member.objects.all(), caller_for_user(staff)).count() == 5
    with pytest.raises(PermissionDenied):
        caller_for_user(UserFactory())
