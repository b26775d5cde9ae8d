from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Timestamptz
from piccolo.columns.indexes import IndexMethod
from piccolo.constraints import Check

ID = "2026-11-22T02:25:00:618016"
VERSION = "1.38.0"
DESCRIPTION = "checkouts: a push renewal's period (renews_from) and the period its payment bought"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="billing_gql", description=DESCRIPTION
    )

    manager.add_column(
        table_class_name="Checkout",
        tablename="checkouts",
        column_name="paid_period_end",
        db_column_name="paid_period_end",
        column_class_name="Timestamptz",
        column_class=Timestamptz,
        params={
            "default": None,
            "null": True,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    manager.add_column(
        table_class_name="Checkout",
        tablename="checkouts",
        column_name="paid_period_start",
        db_column_name="paid_period_start",
        column_class_name="Timestamptz",
        column_class=Timestamptz,
        params={
            "default": None,
            "null": True,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    manager.add_column(
        table_class_name="Checkout",
        tablename="checkouts",
        column_name="renews_from",
        db_column_name="renews_from",
        column_class_name="Timestamptz",
        column_class=Timestamptz,
        params={
            "default": None,
            "null": True,
            "primary_key": False,
            "unique": False,
            "index": False,
            "index_method": IndexMethod.btree,
            "choices": None,
            "db_column_name": None,
            "secret": False,
        },
        schema=None,
    )

    manager.add_constraint(
        table_class_name="Checkout",
        tablename="checkouts",
        constraint_name="checkouts_paid_period_check",
        constraint_class=Check,
        params={
            "condition": "(paid_period_start IS NULL) = (paid_period_end IS NULL) AND (paid_period_start IS NULL OR (purpose = 'renewal' AND renews_from IS NOT NULL AND paid_period_start >= renews_from AND paid_period_end > paid_period_start))"
        },
        schema=None,
    )

    return manager
