# A minimal HTTP server on Ruby's standard library: every request gets a line naming the instance.
require "socket"

port = Integer(ARGV.fetch(0) { ENV.fetch("PORT", "5000") })
dyno = ENV.fetch("DYNO", "web")
$stdout.sync = true

server = TCPServer.new("127.0.0.1", port)
puts "#{dyno}: listening on 127.0.0.1:#{port}"
# pazuzu stops an instance with SIGTERM: leave the accept loop and exit.
trap("TERM") { exit }
at_exit { puts "#{dyno}: stopping" }

loop do
  client = server.accept
  begin
    request = client.gets.to_s.strip
    # Read the headers up to the blank line before answering.
    while (line = client.gets) && line != "\r\n"
    end
    body = "hello from ruby #{dyno} (pid #{Process.pid})\n"
    client.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" \
                 "Content-Length: #{body.bytesize}\r\nConnection: close\r\n\r\n#{body}")
    puts "#{dyno}: #{request}"
  rescue SystemCallError, IOError => e
    puts "#{dyno}: #{e.class}: #{e.message}"
  ensure
    client.close
  end
end
