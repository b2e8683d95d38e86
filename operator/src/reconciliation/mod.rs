//! The Reconciliation controller (issue 17, under way): a Reconciliation runs `kuant agent
//! reconcile` once in a Job, or on its schedule in a CronJob.
//!
//! Pure stages so far: [`cron`] (the schedule checked, with the field that is wrong) and [`job`]
//! (the Job or CronJob).

pub mod cron;
pub mod job;
