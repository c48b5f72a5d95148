"""The HTTP edge shared by every router: problems, auth, routing, pagination."""
