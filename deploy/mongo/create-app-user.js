// Run once by the mongo image on the first start of an empty data volume (/docker-entrypoint-initdb.d),
// as the root user: the user the services connect as, allowed to read and write their own databases
// (<CRM_PREFIX>_<service>) and nothing else.
const prefix = process.env.CRM_PREFIX || "crm";
const services = ["orders", "followups", "loyalty", "referrals"];
db.getSiblingDB("admin").createUser({
  user: process.env.MONGO_APP_USER,
  pwd: process.env.MONGO_APP_PASSWORD,
  roles: services.map((service) => ({ role: "readWrite", db: `${prefix}_${service}` })),
});
