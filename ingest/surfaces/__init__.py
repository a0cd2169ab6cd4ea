"""The edge's surfaces, one aiohttp sub-application each with its own key scopes and error shape;
the operations routes sit on the root application (aiohttp takes no sub-application at "/")."""
