"""`sched run`: the loop that ticks on an interval and wakes on commits (`run`), its
log (`log`), its start and stop recorded in the open (`lifecycle`), and the webhook
delivery it drives (`webhooks`)."""
