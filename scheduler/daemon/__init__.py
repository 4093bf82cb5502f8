"""`sched run`: the loop that ticks on an interval and wakes on commits (`run`), its
log (`log`), its start and stop recorded in the open (`lifecycle`), the webhook
delivery it drives (`webhooks`), and the health level it remembers, announcing each
change (`health_changes`)."""
