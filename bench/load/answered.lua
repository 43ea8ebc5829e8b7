-- answered.lua: a wrk script for the accounting run. It writes one line per
-- completed response, "<status> <X-Request-Id>", to the file named by
-- $LOAD_ANSWERED, so the harness can join the answered requests to the
-- issuance log's rows. Use it with -t1: every thread would open the same file.

local out

function init(args)
  out = assert(io.open(assert(os.getenv("LOAD_ANSWERED"), "LOAD_ANSWERED is not set"), "w"))
end

function response(status, headers, body)
  out:write(status, " ", headers["X-Request-Id"] or "-", "\n")
end
