"""Builds the cffi kernel module at install time (``pip install ./plugins/x86_onednn``)."""

from setuptools import setup

setup(cffi_modules=["src/quantplug_x86_onednn/_ffi_build.py:ffi"])
