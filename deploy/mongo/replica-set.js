// The mongodb service's health check (deploy/docker-compose.yml), run with mongosh as the root user:
// initiate the one-node replica set on the first start (a no-op afterwards), then report healthy only
// while this node is the writable primary, so the services start against a database that takes writes.
try {
  rs.status();
} catch (error) {
  if (error.codeName !== "NotYetInitialized") throw error;
  rs.initiate({ _id: "rs0", members: [{ _id: 0, host: "mongodb:27017" }] });
}
if (!db.hello().isWritablePrimary) quit(1);
