from django.urls import path

from insurers.api import BatchNotifyView, NotifyView

app_name = "insurers"

urlpatterns = [
    path("insurers/<int:insurer_id>/notify", NotifyView.as_view(), name="webhook-notify"),
    path("insurers/<int:insurer_id>/batch-notify", BatchNotifyView.as_view(), name="webhook-batch-notify"),
]
