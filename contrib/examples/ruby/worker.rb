# A background worker: one line per job; on SIGTERM it finishes the current job and exits.
$stdout.sync = true
dyno = ENV.fetch("DYNO", "worker")
stopping = false
trap("TERM") { stopping = true }

job = 0
until stopping
  job += 1
  puts "#{dyno}: processed job #{job}"
  sleep 2
end
puts "#{dyno}: stopping after #{job} jobs"
