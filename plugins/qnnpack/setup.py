"""Builds the cffi kernel module at install time (``pip install ./plugins/qnnpack``)."""

from setuptools import setup

setup(cffi_modules=["src/quantplug_qnnpack/_ffi_build.py:ffi"])
