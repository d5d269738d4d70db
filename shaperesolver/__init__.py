"""shaperesolver."""
