"""Tests of admin/: cohortsync-admin and the simulator."""
