"""`flywheel serve`: an OpenAI-compatible server for any local model, including one a run just trained."""
