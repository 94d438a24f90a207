"""Running models: each loaded model lives in its own model host process."""
