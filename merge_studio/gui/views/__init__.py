"""Views: widgets that show data they are given; they never compute merges."""
