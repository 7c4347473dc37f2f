"""Examples of using the project as a library."""
