-- Comment posts at a steady rate: each connection waits
-- LOAD_COMMENT_INTERVAL_MS between its requests (Debian's wrk has no -R).
-- Half go to the newest tenth of the posts, as readers comment on the
-- front page's posts; authors are random users.
local posts = tonumber(os.getenv("LOAD_POSTS") or "5000")
local users = tonumber(os.getenv("LOAD_USERS") or "2000")
local interval = tonumber(os.getenv("LOAD_COMMENT_INTERVAL_MS") or "40")
local n = 0

function setup(thread)
  thread:set("salt", math.random(1, 1000000))
end

function init(args)
  math.randomseed(os.time() + (salt or 0))
end

function request()
  local post = math.random(posts)
  if math.random(2) == 1 then
    post = posts - math.random(math.max(1, math.floor(posts / 10))) + 1
  end
  n = n + 1
  local body = "author_id=" .. math.random(users) .. "&body=load+comment+" .. n
  return wrk.format("POST", "/posts/" .. post .. "/comments",
    { ["Content-Type"] = "application/x-www-form-urlencoded" }, body)
end

function delay()
  return interval
end

dofile(os.getenv("LOAD_WRK_DIR") .. "/report.lua")
