from django.urls import path

from ledger.api import BalanceView, HistoryView, TopUpView

app_name = "ledger"

urlpatterns = [
    path("balance", BalanceView.as_view(), name="balance"),
    path("topup", TopUpView.as_view(), name="topup"),
    path("history", HistoryView.as_view(), name="history"),
]
