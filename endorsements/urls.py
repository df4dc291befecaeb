from django.urls import path

from endorsements import api

app_name = "endorsements"

urlpatterns = [
    path("", api.EndorsementListCreateView.as_view(), name="endorsement-list"),
    path("batch", api.BatchCreateView.as_view(), name="batch-create"),
    path("batch/<int:batch_id>", api.BatchDetailView.as_view(), name="batch-detail"),
    path("batch/<int:batch_id>/errors", api.BatchErrorsView.as_view(), name="batch-errors"),
    path("<str:tracking_id>", api.EndorsementDetailView.as_view(), name="endorsement-detail"),
    path("<str:tracking_id>/cancel", api.EndorsementCancelView.as_view(), name="endorsement-cancel"),
]
