"""The HR portal's pages, under `/portal/` (see `endorsements.portal_views`)."""

from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import TemplateView

from endorsements import portal_views
from endorsements.portal_forms import PortalAuthenticationForm

app_name = "portal"

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="portal/login.html",
            authentication_form=PortalAuthenticationForm,
            redirect_authenticated_user=True,
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="portal:logged-out"), name="logout"),
    path(
        "logged-out/",
        TemplateView.as_view(template_name="portal/logged_out.html"),
        name="logged-out",
    ),
    path("", portal_views.upload, name="upload"),
    path("template.csv", portal_views.template_csv, name="template"),
    path("policies/", portal_views.policies, name="policies"),
    path("batches/<int:batch_id>/", portal_views.batch_detail, name="batch"),
    path("batches/<int:batch_id>/status", portal_views.batch_status, name="batch-status"),
    path("batches/<int:batch_id>/errors.csv", portal_views.batch_errors_csv, name="batch-errors-csv"),
    path("endorsements/", portal_views.endorsement_list, name="endorsements"),
    path("endorsements/<str:tracking_id>/", portal_views.endorsement_detail, name="endorsement"),
    path(
        "endorsements/<str:tracking_id>/cancel",
        portal_views.endorsement_cancel_view,
        name="endorsement-cancel",
    ),
    path("balance/", portal_views.balance, name="balance"),
    path("history/", portal_views.history, name="history"),
    path("payments/", portal_views.payments, name="payments"),
]
