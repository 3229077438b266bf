"""Mixture-of-experts assembly (mergekit-moe's YAML): config, routers, the build job."""
