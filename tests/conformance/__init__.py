"""Conformance of the emulator's answers to the providers' published material.

One schema module per provider (``replicate_schemas``, ``fal_schemas``, ``openai_schemas``), each
naming the repository, path and commit (or documentation page) it was written from, and one test
module per provider that drives the emulator with the real SDKs and raw httpx across success,
every fault and every route, records every answer (``Emulator(record_bodies=True)``) and
validates each against its schema. The schemas are ours, written from what the sources say; they
are closed (``additionalProperties: false``) wherever the source enumerates an object's fields,
so a field the emulator invents fails.
"""
