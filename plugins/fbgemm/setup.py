"""Builds the cffi kernel module at install time (``pip install ./plugins/fbgemm``)."""

from setuptools import setup

setup(cffi_modules=["src/quantplug_fbgemm/_ffi_build.py:ffi"])
