-- bulk_release: the runner of a bulk job lets go of it: back to queued when it stops
-- (another runner goes on at once, not after the lease), or failed with an error it
-- could not get past.
-- KEYS: the queue's keys, then {q}:bulk.
-- ARGV: job id, runner id, error ('' : back to queued)
-- Returns: 1 when released, 0 when this runner did not hold the job (any more).
local K_BULK = KEYS[28]
local id, runner, err = ARGV[1], ARGV[2], ARGV[3]
local job = bulk_job(K_BULK, id)
if not job or job.status ~= 'running' or job.runner ~= runner then return 0 end
local now = now_ms()
job.updated_at, job.lease_until = now, nil
if err == '' then
  job.status = 'queued'
else
  job.status, job.error, job.finished_at = 'failed', err, now
end
redis.call('HSET', K_BULK, id, cjson.encode(job))
return 1
