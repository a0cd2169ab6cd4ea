"""How cohortsync runs: embedded services for local use, container image, compose, Kubernetes."""
