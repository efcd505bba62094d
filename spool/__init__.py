"""The contract every datarun machine shares: spool layout, manifests, schema and SQL.

spool is the bottom layer: it imports no daemon and no CLI, and it is the only
package that talks to PostgreSQL.
"""
