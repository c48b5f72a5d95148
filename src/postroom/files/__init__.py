"""Files kept in the database (uploads for imports, results of exports), in chunks, so no
node's local disk holds state and large files stream in and out with flat memory."""
