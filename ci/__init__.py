"""What `python3 dev.py` runs beyond the quick local test: the suite on the datadog-checks-base
floor, the suite on CPython 3.13 (the Agent's Python) and Datadog's own validators.

Standard library only, like dev.py: a fresh machine has nothing but python3.
"""
