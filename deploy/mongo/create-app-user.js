// Run once by the mongo image on the first start of an empty data volume (/docker-entrypoint-initdb.d),
// as the root user: the user the services connect as, allowed to read and write their own databases
// (<CRM_PREFIX>_<service>), and to end transactions left open by killed clients.
const prefix = process.env.CRM_PREFIX || "crm";
const services = ["orders", "followups", "loyalty", "referrals"];
// Seeing and ending the transactions of clients that are gone (a replica killed mid-commit), which each
// service does as it starts (docs/operations.md); without it a restarted replica waits for MongoDB to end them.
db.getSiblingDB("admin").createRole({
  role: "rapportEndOrphanedTransactions",
  privileges: [{ resource: { cluster: true }, actions: ["inprog", "killAnySession"] }],
  roles: [],
});
db.getSiblingDB("admin").createUser({
  user: process.env.MONGO_APP_USER,
  pwd: process.env.MONGO_APP_PASSWORD,
  roles: [
    ...services.map((service) => ({ role: "readWrite", db: `${prefix}_${service}` })),
    { role: "rapportEndOrphanedTransactions", db: "admin" },
  ],
});
