"""People's and employers' names for the ids that audit records and histories carry.

Services record an actor as `user:<id>` (staff and HR users), `client:<client_id>` (API
clients) or `system:<part>`; audit records name the employer by id. Pages show names:
`names_for(actors=..., employer_ids=...)` reads them in one query per kind, however
many records a page has. An id that no longer resolves is shown as it was recorded.
`actor_recorded(text)` goes the other way for a filter: a bare username is `user:<id>`.
"""

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth import get_user_model

from ems.models import ApiClient, Employer


@dataclass(frozen=True)
class Names:
    actors: dict[str, str]
    employers: dict[int, str]

    def actor(self, actor: str) -> str:
        return self.actors.get(actor, actor)

    def employer(self, employer_id: int | None) -> str:
        if employer_id is None:
            return ""
        return self.employers.get(employer_id, f"#{employer_id}")


def names_for(*, actors: Iterable[str], employer_ids: Iterable[int | None]) -> Names:
    user_ids: dict[int, str] = {}
    client_ids: dict[str, str] = {}
    for actor in set(actors):
        kind, _, ident = str(actor).partition(":")
        if kind == "user" and ident.isdigit():
            user_ids[int(ident)] = actor
        elif kind == "client" and ident:
            client_ids[ident] = actor
    names: dict[str, str] = {}
    if user_ids:
        users = get_user_model().objects.filter(pk__in=user_ids).values_list("pk", "username")
        names.update({user_ids[pk]: username for pk, username in users})
    if client_ids:
        clients = ApiClient.objects.filter(client_id__in=client_ids).values_list(
            "client_id", "name", "employer__name"
        )
        names.update({client_ids[cid]: f"{name} (API client, {employer})" for cid, name, employer in clients})
    wanted = {int(pk) for pk in employer_ids if pk is not None}
    employers = dict(Employer.objects.filter(pk__in=wanted).values_list("pk", "name")) if wanted else {}
    return Names(actors=names, employers=employers)


def actor_recorded(text: str) -> str:
    """What an actor filter looks for: `text` as typed, or `user:<id>` for a bare username."""
    text = text.strip()
    if not text or ":" in text:
        return text
    user = get_user_model().objects.filter(username=text).values_list("pk", flat=True).first()
    return f"user:{user}" if user is not None else text
