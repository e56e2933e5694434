#!/usr/bin/env bash
# Nothing to stop: Chromium runs only inside the browser tests, which close it.
exit 0
