"""Video-level agents: the diffusers renderer, its render cache, and the video reward metrics."""
