"""The model manager's core: the curated catalog, Hub search, hardware fit, verified
resumable downloads and local imports. No Qt; network only inside `online.hub_online`."""
