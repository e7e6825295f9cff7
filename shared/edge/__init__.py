"""Edges of the Function App: the HTTP emit API and the Azure Web PubSub feed."""
