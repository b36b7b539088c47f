"""The trace viewer: a local, read-only web app over the store (`promptloop ui`)."""
