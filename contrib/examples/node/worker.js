// A background worker: one line per job; on SIGTERM it stops taking jobs and exits.
"use strict";

const dyno = process.env.DYNO ?? "worker";
let job = 0;

const timer = setInterval(() => {
  job += 1;
  console.log(`${dyno}: processed job ${job}`);
}, 2000);

process.on("SIGTERM", () => {
  clearInterval(timer);
  console.log(`${dyno}: stopping after ${job} jobs`);
});
