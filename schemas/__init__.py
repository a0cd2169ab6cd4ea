"""Shapes that cross a process boundary: settings, Redis layout, jobs, HTTP bodies, SQL."""
