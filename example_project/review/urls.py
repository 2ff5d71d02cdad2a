from __future__ import annotations

from django.urls import path

from review.views import CompleteView, NaiveTodayView, TodayView

urlpatterns = [
    path("review/today/", TodayView.as_view(), name="review-today"),
    path("review/today/naive/", NaiveTodayView.as_view(), name="review-today-naive"),
    path("review/complete/<int:schedule_id>/", CompleteView.as_view(), name="review-complete"),
]
