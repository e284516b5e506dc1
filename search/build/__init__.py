"""Building bundles: source rows -> fetch (behind the network guard) -> embed -> shards -> finalize -> publish; Ray,
the Qdrant loader, thumbnails, picture facts and the UI hints measured on a bundle."""
