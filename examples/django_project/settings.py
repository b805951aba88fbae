"""Minimal settings for the leap-sync Django example."""

import os

SECRET_KEY = "example-only-not-secret"
DEBUG = False
INSTALLED_APPS = ["leapapp"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

LEAP_PROJECT_ID = os.environ.get("LEAP_PROJECT", "project_x")
LEAP_TOKEN = os.environ.get("LEAP_TOKEN") or None
LEAP_URL = os.environ.get("LEAP_URL", "wss://leap.hop.io/ws")
