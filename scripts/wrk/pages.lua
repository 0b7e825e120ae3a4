-- Random post pages, and the front page for LOAD_FRONT_PERCENT of requests.
-- Post ids are 1..LOAD_POSTS: the seed of a fresh database.
local posts = tonumber(os.getenv("LOAD_POSTS") or "5000")
local front = tonumber(os.getenv("LOAD_FRONT_PERCENT") or "0")

function setup(thread)
  thread:set("salt", math.random(1, 1000000))
end

function init(args)
  math.randomseed(os.time() + (salt or 0))
end

function request()
  if math.random(100) <= front then
    return wrk.format("GET", "/")
  end
  return wrk.format("GET", "/posts/" .. math.random(posts))
end

dofile(os.getenv("LOAD_WRK_DIR") .. "/report.lua")
