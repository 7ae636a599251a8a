"""modelrun's prediction service and the model store it shares with training/."""
