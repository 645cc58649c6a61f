"""Campaign jobs behind one small interface (:class:`host.jobs.queue.CampaignQueue`).

On SQLite the server's own threads run them (:mod:`host.marketing.job_runner`, a lease loop
on the ``campaigns`` row); on PostgreSQL procrastinate does, in ``crm-host worker``
processes and (by default) inside ``crm-host serve``: :mod:`host.jobs.pg_queue` defers a job
in the campaign row's own transaction, :mod:`host.jobs.worker` runs them. The campaign's
lease stays the guard that one campaign never runs twice at once; the engine adds retries,
a per-tenant limit, priorities, stalled-job recovery and a view of failed jobs.
``host.marketing`` knows only the interface, never procrastinate.
"""
