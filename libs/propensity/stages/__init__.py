"""The stages (``ingest``, ``features``, ``training``, ``evaluation``, ``scoring``, ``publish``, ``analyst``, generate).

A regular package, so that ``find_packages`` puts every stage into the wheel; the stages
never import each other (``tests/test_architecture.py``).
"""
