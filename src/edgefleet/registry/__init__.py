"""Model registry: models, semantic versions, variants, golden samples, reference profiles.

A version is registered from a bundle directory (an ``edgefleet.yaml`` manifest, the
artifact files and golden samples; see ``docs/bundle-format.md``) and is immutable from
then on; only its stage changes (``candidate`` → ``production`` → ``archived``)::

    from edgefleet.registry.service import RegistryService
    service = RegistryService(uow_factory, artifact_store)
    version = service.register(Path("bundles/digits-1.1.0"), author="ana")
    service.promote("digits", "1.1.0", "production", actor="ana")

The pure decision code lives in ``semver``, ``manifest``, ``domain``, ``golden``,
``profile``, ``compare`` and ``stages``; ``bundle``, ``artifacts``, ``verify`` and
``service`` do the I/O. This ``__init__`` imports nothing so that devices can use the
pure modules without the server's dependencies.
"""
