"""``rtanim webcam --panel``: a local browser page that drives the live face (AU sliders, presets, timelines).

``state`` holds what the page changes (no web code, tested alone); ``live`` joins it to a running
pipeline; ``server`` is the HTTP API and its thread; ``static/`` the page (plain HTML, JS and CSS,
no build step, nothing fetched from the network). Only ``server`` imports the web libraries,
which the ``panel`` extra installs.
"""
