"""What the edge's routes call: accepting membership changes and managing audiences."""
