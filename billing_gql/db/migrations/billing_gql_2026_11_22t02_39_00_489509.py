from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Array
from piccolo.columns.column_types import Text
from piccolo.columns.indexes import IndexMethod

ID = "2026-11-22T02:39:00:489509"
VERSION = "1.38.0"
DESCRIPTION = "checkouts.error_field: the field path of a failed checkout's error"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="billing_gql", description=DESCRIPTION
    )

    manager.add_column(
        table_class_name="Checkout",
        tablename="checkouts",
        column_name="error_field",
        db_column_name="error_field",
        column_class_name="Array",
        column_class=Array,
        params={
            "default": None,
            "base_column": Text(
                default="",
                null=False,
                primary_key=False,
                unique=False,
                index=False,
                index_method=IndexMethod.btree,
                choices=None,
                db_column_name=None,
                secret=False,
            ),
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

    return manager
