from piccolo.apps.migrations.auto.migration_manager import MigrationManager
from piccolo.columns.column_types import Array
from piccolo.columns.column_types import UUID
from piccolo.columns.defaults.uuid import UUID4
from piccolo.columns.indexes import IndexMethod

ID = "2026-11-22T01:51:05:082700"
VERSION = "1.38.0"
DESCRIPTION = "invoice_items.carried_by: every push checkout that carried the item"


async def forwards():
    manager = MigrationManager(
        migration_id=ID, app_name="billing_gql", description=DESCRIPTION
    )

    manager.add_column(
        table_class_name="InvoiceItem",
        tablename="invoice_items",
        column_name="carried_by",
        db_column_name="carried_by",
        column_class_name="Array",
        column_class=Array,
        params={
            "default": list,
            "base_column": UUID(
                default=UUID4(),
                null=False,
                primary_key=False,
                unique=False,
                index=False,
                index_method=IndexMethod.btree,
                choices=None,
                db_column_name=None,
                secret=False,
            ),
            "null": False,
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
