"""How the configuration is declared: the field types with their rules, list entries, the
outside facts a validation reads, placeholders, and the expression language of ``when``
conditions and tuning values. Below every section: it imports only the shared modules."""
