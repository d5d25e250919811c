"""Import every business area's models so that metadata (and Alembic) sees all tables."""


def load_all() -> None:
    import entitle.access_commander.models
    import entitle.axis.models
    import entitle.catalog.models
    import entitle.delivery.models
    import entitle.history.models
    import entitle.keys.models
    import entitle.ledger.models
    import entitle.my2n.models
    import entitle.platform.models
    import entitle.signing.models
    import entitle.systems.models
    import entitle.tenancy.models  # noqa: F401
