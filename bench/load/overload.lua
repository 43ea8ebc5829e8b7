-- overload.lua: a wrk script for the overload run. It writes one line per
-- completed response, "<status> <X-Request-Id> <Retry-After>" ("-" for a
-- header the response lacks), to the file named by $LOAD_ANSWERED, so the
-- harness can count the statuses (200, 503, other), check that every 503
-- says when to retry, and join the answered requests to the issuance log's
-- rows. Use it with -t1: every thread would open the same file.

local out

function init(args)
  out = assert(io.open(assert(os.getenv("LOAD_ANSWERED"), "LOAD_ANSWERED is not set"), "w"))
end

function response(status, headers, body)
  out:write(status, " ", headers["X-Request-Id"] or "-", " ", headers["Retry-After"] or "-", "\n")
end
