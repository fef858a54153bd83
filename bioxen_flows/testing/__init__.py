"""Test doubles for BioXen Flows' infrastructure, as moto is for AWS: not used in production.

`xapi_simulator.XapiSimulator` answers like xapi (XCP-ng's API daemon) on loopback, so
code that drives a pool can be tested, benchmarked and demonstrated without one.
"""
